# Two stacked Elman layers: the first layer's h1 is the second layer's input,
# and each layer carries its own state through time.
#   e = x L    h1 = σ(h1(t-1) H1 + e I1 + b1)    h2 = σ(h2(t-1) H2 + h1 I2 + b2)    yhat = softmax(h2 U + b3)
dim V = 5, d = 3, D1 = 4, D2 = 6

input  x       : onehot(V)
input  h1_prev : D1
input  h2_prev : D2
target y       : onehot(V)
param  L  : V x d
param  I1 : d x D1
param  H1 : D1 x D1
param  b1 : D1
param  I2 : D1 x D2
param  H2 : D2 x D2
param  b2 : D2
param  U  : D2 x V
param  b3 : V
recur  h1_prev <- h1
recur  h2_prev <- h2

e    = x L
h1   = sigmoid(h1_prev H1 + e I1 + b1)
h2   = sigmoid(h2_prev H2 + h1 I2 + b2)
yhat = softmax(h2 U + b3)
J    = cross_entropy(yhat, y)
