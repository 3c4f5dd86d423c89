# A one-hidden-layer perceptron with a softmax output (the issue's example):
#   h = relu(x W1 + b1);  yhat = softmax(h W2 + b2)
dim D = 3, Dh = 4, V = 5

input  x  : D                 # a 1×D row of features
target y  : onehot(V)
param  W1 : D x Dh
param  b1 : Dh
param  W2 : Dh x V
param  b2 : V

h = relu(x W1 + b1); yhat = softmax(h W2 + b2)
J = cross_entropy(yhat, y)
