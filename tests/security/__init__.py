"""One regression test per finding of the outside security review (issue 21), on a live stack."""
