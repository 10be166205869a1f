"""Human-in-the-loop gates: approval requests, reviewers' decisions, the inbox and email replies."""
