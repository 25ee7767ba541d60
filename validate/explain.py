"""`python -m validate.explain`: the teaching walk of validate/audit/explain.py under its short name."""
from validate.audit.explain import main

if __name__ == "__main__":
    main()
