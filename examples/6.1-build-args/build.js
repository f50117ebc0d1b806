// `npm run build` of exercise 6.1: bakes the API URL that the Dockerfile wrote to .env.production
// (from the API_URL build argument) into dist/index.html, as Vite would.
const fs = require('fs');

const env = {};
for (const line of fs.readFileSync('.env.production', 'utf8').split('\n')) {
  const m = line.match(/^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/);
  if (m) env[m[1]] = m[2];
}
fs.mkdirSync('dist', { recursive: true });
fs.writeFileSync(
  'dist/index.html',
  `<h1>App</h1>\n<p>API: <a href="${env.VITE_API_URL}">${env.VITE_API_URL}</a></p>\n`,
);
console.log(`Built for VITE_API_URL=${env.VITE_API_URL}`);
