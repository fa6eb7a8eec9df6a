"""graphopt.ir"""
