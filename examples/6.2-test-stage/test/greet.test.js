// `npm run test` of exercise 6.2: a failing assertion fails the `test` stage, hence the build.
const assert = require('assert');
const { greet } = require('../src/greet');

assert.strictEqual(greet('cairn'), 'Hello, cairn!');
console.log('1 test passed');
