"""Independent references for mechverify: tasks, algorithms, derivations, dynamics.

numpy / scipy / sympy only -- never torch -- so that a reference can never share a bug
with the torch construction it checks.
"""
