from flask import Flask, jsonify
import pandas as pd
import numpy as np

app = Flask(__name__)

@app.route('/')
def home():
    # Démonstration que pandas/numpy fonctionnent
    df = pd.DataFrame({'a': [1, 2, 3]})
    arr = np.array([1, 2, 3])

    return jsonify({
        'message': 'Hello from multi-stage Python!',
        'pandas_sum': int(df['a'].sum()),
        'numpy_sum': int(arr.sum())
    })

if __name__ == '__main__':
    app.run(host='0.0.0.0', port=5000)
