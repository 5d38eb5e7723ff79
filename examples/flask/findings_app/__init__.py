"""A Flask application that emails a finding's assignee when someone reports the finding."""
