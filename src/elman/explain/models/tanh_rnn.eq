# A vanilla tanh RNN over dense inputs: h(t) = tanh(h(t-1) Wh + x(t) Wx + b)
dim D = 3, Dh = 4, V = 5

input  x      : D
input  h_prev : Dh
target y      : onehot(V)
param  Wx : D x Dh
param  Wh : Dh x Dh
param  b  : Dh
param  Wy : Dh x V
param  by : V
recur  h_prev <- h

h    = tanh(h_prev Wh + x Wx + b)
yhat = softmax(h Wy + by)
J    = cross_entropy(yhat, y)
