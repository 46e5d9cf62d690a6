"""fledge: builds Volant plugin images (initramfs appliances and OCI root disks)."""

__version__ = "0.1.0"
