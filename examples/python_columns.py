"""Python columns, the JamAI SDK's section 12: a column computed by Python code reading the
``row`` dict (values not wrapped), with the seed's name-matching example.

The seed's code as written; only the imports changed.
"""
# ruff: noqa: I001

from rowforge.clients import RowForge as JamAI
import rowforge.clients.types as t

jamai = JamAI()

try:
    jamai.table.delete_table('action', 'kyc')
except Exception:
    pass

jamai.table.create_action_table(t.ActionTableSchemaCreate(id="kyc", cols=[
    t.ColumnSchemaCreate(id="declared", dtype="str"),
    t.ColumnSchemaCreate(id="extracted", dtype="str"),
    t.ColumnSchemaCreate(id="match", dtype="str", gen_config=t.PythonGenConfig(
        python_code="""
from difflib import SequenceMatcher
try:
    a = row["declared"].upper()
    b = row["extracted"].upper()
    ratio = SequenceMatcher(None, a, b).ratio()
    row["match"] = f"{'MATCH' if ratio > 0.85 else 'MISMATCH'} ({ratio*100:.0f}%)"
except Exception as e:
    row["match"] = f"ERROR: {str(e)}"
"""
    )),
]))

response = jamai.table.add_table_rows('action', t.MultiRowAddRequest(
    table_id="kyc",
    data=[{"declared": "Alice Tan", "extracted": "ALICE TAN"},
          {"declared": "Alice Tan", "extracted": "Bob Lee"}],
    stream=False))
for row in response.rows:
    print(row.columns["match"].text)

jamai.table.delete_table('action', 'kyc')
