// The code under test in exercise 6.2.
function greet(name) {
  return `Hello, ${name}!`;
}

module.exports = { greet };
