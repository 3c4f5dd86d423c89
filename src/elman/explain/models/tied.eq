# An Elman language model with tied input and output embeddings (Press &
# Wolf 2017; Inan et al. 2017): the matrix E that looks up the input word
# also scores the output words, as h Eᵀ, so its gradient is the sum of two.
#   e = x E     h = tanh(h(t-1) H + e I + b1)     yhat = softmax(h Eᵀ + b2)
dim V = 5, d = 3

input  x      : onehot(V)
input  h_prev : d
target y      : onehot(V)
param  E  : V x d
param  I  : d x d
param  H  : d x d
param  b1 : d
param  b2 : V
recur  h_prev <- h

e    = x E
h    = tanh(h_prev H + e I + b1)
yhat = softmax(h E.T + b2)
J    = cross_entropy(yhat, y)
