"""Write .cog/openapi_schema.json from predict.py, as `cog build` does (devtools/openapi_schema.py).

Usage: python scripts/write_openapi_schema.py [--predictor predict.py:Predictor]
                                             [--out .cog/openapi_schema.json]
"""

from devtools.openapi_schema import main

if __name__ == "__main__":
    main()
