"""The Nitro Secure Module behind one interface (`Nsm`) and its CBOR request protocol.

The device backend is `enclave.native.nsm_device`; local stand-ins (the mock NSM) live
in `parent.local` and are injected by the local launcher.
"""
