# An LSTM language-model step (Hochreiter & Schmidhuber; the forget gate of
# Gers et al.), row vectors, two states carried through time:
#   i, f, o = σ(x W + h(t-1) U + b)         input, forget, output gates
#   g = tanh(x Wg + h(t-1) Ug + b_g)        candidate
#   c = f ⊙ c(t-1) + i ⊙ g                  cell
#   h = o ⊙ tanh(c)
dim D = 3, Dh = 4, V = 5

input  x      : D
input  h_prev : Dh
input  c_prev : Dh
target y      : onehot(V)
param  Wi, Wf, Wg, Wo : D x Dh
param  Ui, Uf, Ug, Uo : Dh x Dh
param  b_i, b_f, b_g, b_o : Dh
param  Wy : Dh x V
param  by : V
recur  h_prev <- h
recur  c_prev <- c

i    = sigmoid(x Wi + h_prev Ui + b_i)
f    = sigmoid(x Wf + h_prev Uf + b_f)
g    = tanh(x Wg + h_prev Ug + b_g)
o    = sigmoid(x Wo + h_prev Uo + b_o)
c    = f * c_prev + i * g
tc   = tanh(c)
h    = o * tc
yhat = softmax(h Wy + by)
J    = cross_entropy(yhat, y)
