"""graphopt.backends"""
