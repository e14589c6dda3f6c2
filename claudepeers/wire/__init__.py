"""The wire: AMP commands and errors, the box codec, the fast AMP.

Empty on purpose: the hook imports :mod:`claudepeers.wire.box`, which must not pull in Twisted.
"""
