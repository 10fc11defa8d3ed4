"""`hermetic report`: a compliance report, in HTML and PDF, built only from verified evidence.

One concern per module: `facts` verifies the inputs and computes every number the report
states; `plots` draws the
figures; `frameworks` maps the evidence onto NIST SP 800-226, GDPR, HIPAA and CCPA;
`content` writes the prose into the small document model of `document`; `html` and
`pdf` render that one model; `writer` puts the files into place.
"""
