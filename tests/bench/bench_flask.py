"""The Flask JSON endpoint of the benchmark (``bench_flask:app``).

A separate module so that only this workload's workers import Flask.
"""

from flask import Flask, jsonify, request

app = Flask("bench")


@app.route("/json")
def json_endpoint():
    return jsonify(message="Hello, World!", path=request.path,
                   args=request.args.to_dict(), items=list(range(10)))
