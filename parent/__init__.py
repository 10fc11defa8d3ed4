"""Hermetic's untrusted host side: the parent proxy, data-owner tools and the CLI."""
