"""graphopt.frontends"""
