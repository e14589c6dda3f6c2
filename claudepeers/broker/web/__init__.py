"""The operator's dashboard (DESIGN 9): a live page served by the broker on 127.0.0.1.

server.py starts it on demand; auth.py decides who gets in; site.py routes requests;
views.py shapes what the page shows; stream.py pushes updates (server-sent events);
actions.py carries out the page's requests through the broker's own methods;
responders.py is the ``OpenDashboard`` AMP command; static/ is the page itself.

Nothing is imported here: the broker's protocol imports responders.py at start, and
twisted.web only comes in with server.py when the first link is asked for.
"""
