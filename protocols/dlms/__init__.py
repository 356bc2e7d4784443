"""DLMS/COSEM (IEC 62056), client side first, sans-IO. Reference: ``docs/protocols.md``.

Layers, bottom up:

* ``wrapper``, ``hdlc`` and ``hdlc_link``: framing (IEC 62056-47 WRAPPER; IEC 62056-46 HDLC);
* ``security``: suite 0 ciphering (AES-GCM-128) and the HLS-GMAC authentication function;
* ``axdr`` (with ``calendar``): the A-XDR encoding of COSEM data; ``obis``: logical names;
  ``cosem``: interface classes;
* ``apdu``: xDLMS services (GET, SET, ACTION, notifications); ``acse``: AARQ/AARE, RLRQ/RLRE;
* ``connection``: ``ClientConnection``, the association state machine tying them together;
* ``translator``: captured bytes to readable text, for ``hesctl decode``.
"""
