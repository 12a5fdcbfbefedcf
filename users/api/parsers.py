"""Request body parsers of the API: DRF's, with JSON that cannot be read made a 400 whatever
the reason. (DRF's own JSONParser turns ValueError into a 400, but a body nested thousands deep
raises RecursionError out of the json module, which would be a 500.)"""

from __future__ import annotations

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class SafeJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply") from None
        except LookupError:  # an unknown charset in the Content-Type
            raise ParseError("JSON parse error - unknown charset") from None
