"""The broker process: service, AMP protocol, actors, mail, naming, events, storage.
"""
