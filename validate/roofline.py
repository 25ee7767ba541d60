"""`python -m validate.roofline`: validate/speed/roofline.py."""
from validate.speed.roofline import main

if __name__ == "__main__":
    main()
