"""Writers of the tiny random-weight profile:
miniatures of every production component in the production layout.
"""
