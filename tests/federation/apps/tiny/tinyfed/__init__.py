"""A tiny Flower app for werkhub's runtime tests: FedAvg of a linear model on numpy."""
