"""Sign-in: university SSO through OpenID Connect (Authlib), local passwords, the session."""
