"""Model serving: loading checkpoints and generating replies off the event loop.

The chat side talks to `chatbot.serving.gateway` only; what sits behind it (today an
in-process engine thread per loaded model) can be swapped for a remote model server.
"""
