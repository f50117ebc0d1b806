// The development server of exercise 5.2 (`npm run dev`), on :3000. It uses the dependency that
// `npm ci` installed through the bind-mounted package.json and package-lock.json.
const http = require('http');
const ms = require('ms');

const started = Date.now();
http
  .createServer((req, res) => {
    res.setHeader('Content-Type', 'text/plain');
    res.end(`Hello from the bind-mount dev image, up ${ms(Date.now() - started + 1)}\n`);
  })
  .listen(3000, () => console.log('dev server listening on :3000'));
