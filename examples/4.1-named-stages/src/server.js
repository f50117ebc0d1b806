// The server of exercise 4.1 (the tutorial runs dist/server.js but does not write it).
// `npm run dev` runs it from src/, the production image from dist/ (what `npm run build` makes).
const http = require('http');
const path = require('path');
const ms = require('ms');

const port = Number(process.env.PORT || 3000);
const mode = path.basename(__dirname) === 'dist' ? 'production' : 'development';
const started = Date.now();

http
  .createServer((req, res) => {
    res.setHeader('Content-Type', 'text/plain');
    res.end(`Hello from myapp (${mode}), up ${ms(Date.now() - started + 1)}\n`);
  })
  .listen(port, () => console.log(`myapp (${mode}) listening on :${port}`));
