"""Who may see what: users and logins, the gated SQL proxy and its policy, releases."""
