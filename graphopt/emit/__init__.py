"""graphopt.emit"""
