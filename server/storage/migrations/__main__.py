"""``python -m rowforge.server.storage.migrations revision "message"``: write the next
migration from the difference between the models and a database at the current head."""

import sys

from rowforge.server.storage.migrations import new_revision

if len(sys.argv) != 3 or sys.argv[1] != "revision":
    sys.exit('usage: python -m rowforge.server.storage.migrations revision "message"')
print(new_revision(sys.argv[2]))
