"""Transports: the links that carry DLMS between hesd and meters (TCP, serial, MQTT)."""
