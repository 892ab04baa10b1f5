"""Key agreement: PQXDH (default) and X3DH, behind one interface."""
