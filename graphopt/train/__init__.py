"""graphopt.train"""
