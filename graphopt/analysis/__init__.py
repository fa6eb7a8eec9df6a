"""graphopt.analysis"""
