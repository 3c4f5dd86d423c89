# The Elman RNN language model of the seed, one time step t, row vectors.
#   e(t) = x(t) L      h(t) = sigmoid(h(t-1) H + e(t) I + b1)      yhat(t) = softmax(h(t) U + b2)
# The dims are the sizes of the random instances the formulas are checked on
# (small and all different, so that a shape says which dim it is).
dim V = 5, d = 3, Dh = 4

input  x      : onehot(V)     # the word at time t
input  h_prev : Dh            # h(t-1), a 1×Dh row
target y      : onehot(V)     # the word at time t+1
param  L  : V x d
param  I  : d x Dh
param  H  : Dh x Dh
param  U  : Dh x V
param  b1 : Dh
param  b2 : V
recur  h_prev <- h            # h(t-1) of step t+1 is h(t) of step t

e    = x L
h    = sigmoid(h_prev H + e I + b1)      # the argument is named z1
yhat = softmax(h U + b2)                 # the argument is named z2
J    = cross_entropy(yhat, y)            # J(t) = -log yhat[y]
