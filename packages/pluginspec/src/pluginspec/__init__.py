"""Shared models of Volant: plugin manifest, fledge.toml, VM config and the guest boot contract."""
