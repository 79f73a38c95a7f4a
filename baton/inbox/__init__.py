"""The approver inbox: a web page where approvers sign in and decide (``baton inbox serve``).

``auth`` (sign-in, CSRF, approval tokens), ``backend`` (Temporal visibility, queries and
Updates), ``forms`` (the amend form from the amendment schema), ``app`` (pages),
``server`` (composition from Settings). See docs/governance/inbox.md.
"""

from baton.inbox.app import InboxConfig, create_app, request_path

__all__ = ["InboxConfig", "create_app", "request_path"]
