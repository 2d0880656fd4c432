"""EchoMod inference engines, one folder each, behind the interface in `engines/base.py`."""
