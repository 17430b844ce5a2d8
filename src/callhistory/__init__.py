"""callhistory: the call-history service of a cloud PBX."""
