"""graphopt.models"""
