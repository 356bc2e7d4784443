"""Sans-IO wire protocols of hesd.

Everything under ``protocols`` takes bytes and the current time and returns events and bytes to
send. Nothing here imports asyncio, sockets, serial or MQTT libraries (``tests/test_layers.py``
enforces it), so every protocol path can be tested byte by byte.
"""
