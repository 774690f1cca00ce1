"""Answer quality: what users and judges say about the gateway's answers."""
