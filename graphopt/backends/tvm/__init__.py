"""graphopt.backends.tvm"""
