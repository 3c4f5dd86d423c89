# A GRU language-model step in PyTorch's convention (torch.nn.GRU), row vectors:
#   r = σ(x Wr + h(t-1) Ur + b_r)           reset gate
#   z = σ(x Wz + h(t-1) Uz + b_z)           update gate
#   n = tanh(x Wn + b_n + r ⊙ (h(t-1) Un + b_hn))
#   h = (1 − z) ⊙ n + z ⊙ h(t-1)
dim D = 3, Dh = 4, V = 5

input  x      : D
input  h_prev : Dh
target y      : onehot(V)
param  Wr, Wz, Wn : D x Dh
param  Ur, Uz, Un : Dh x Dh
param  b_r, b_z, b_n, b_hn : Dh
param  Wy : Dh x V
param  by : V
recur  h_prev <- h

r    = sigmoid(x Wr + h_prev Ur + b_r)
z    = sigmoid(x Wz + h_prev Uz + b_z)
n    = tanh(x Wn + b_n + r * (h_prev Un + b_hn))
h    = (1 - z) * n + z * h_prev
yhat = softmax(h Wy + by)
J    = cross_entropy(yhat, y)
