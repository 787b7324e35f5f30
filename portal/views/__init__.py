"""Blueprints: parse input, call one service, render a page or a fragment, or redirect."""
