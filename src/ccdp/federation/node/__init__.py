"""The node agent (outward-only connection to the hub), held answers for manual release, and
offline answers as signed result files; and the node's own workflows that read its store and
talk to the hub: randomising a patient (enrol), referring a child to the expert board
(referral), and the custodian's project decisions checked against every task (projects). The
pure rules they apply stay below, in ccdp.clinical and ccdp.governance."""
