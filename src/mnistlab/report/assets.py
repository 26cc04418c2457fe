"""The report's stylesheet and scripts, inlined into every page (the report works offline)."""

CSS = """
:root{--fg:#1d2330;--muted:#667085;--line:#e4e7ec;--bg:#f4f5f7;--accent:#2563eb;--best:#067647}*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif}
main{max-width:1240px;margin:0 auto;padding:24px}footer{text-align:center;margin-top:24px}a{color:var(--accent);text-decoration:none}
.card{background:#fff;border:1px solid var(--line);border-radius:10px;padding:16px 20px;margin:0 0 16px;box-shadow:0 1px 2px #1018280d}
h1{font-size:26px;margin:0 0 6px}h2{font-size:19px;margin:30px 0 12px}h3{font-size:15px;margin:0 0 6px}h4{font-size:13px;margin:14px 0 8px}
.kicker{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.06em}.desc{white-space:pre-line;margin:0 0 12px;max-width:75ch}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:3px 18px;margin:0}dl.facts dt{color:var(--muted)}dl.facts dd{margin:0}
nav.toc ol{margin:4px 0 0;padding-left:22px;columns:2}.table-wrap{overflow-x:auto}
table.sortable{border-collapse:collapse;width:100%;font-size:12.5px;font-variant-numeric:tabular-nums}
th,td{padding:6px 7px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}td.model{overflow-wrap:anywhere;min-width:8em}
th{white-space:nowrap;cursor:pointer;user-select:none;background:#f9fafb}th:hover{background:#eef2f6}
th[data-dir=asc]::after{content:" ▲"}th[data-dir=desc]::after{content:" ▼"}td.num,th.num{text-align:right}td.num{white-space:nowrap}
td .spread{display:block;color:var(--muted);font-size:12px}tr.incomplete td{background:#fffcf5}
td.best,.best-key{font-weight:700;color:var(--best);background:#ecfdf3}
.badge{display:inline-block;white-space:nowrap;padding:0 7px;border-radius:9px;font-size:12px;font-weight:600;margin-right:4px;vertical-align:1px}
.s-done{background:#ecfdf3;color:#067647}.s-running{background:#eff8ff;color:#175cd3}.s-interrupted{background:#fffaeb;color:#b54708}.s-pending{background:#f2f4f7;color:#475467}
.s-diverged{background:#fffaeb;color:#b54708}.s-failed,.s-damaged{background:#fef3f2;color:#b42318}.plot{width:100%}
.note{color:var(--muted);font-size:13px;margin:6px 0 0}.mistakes{display:grid;grid-template-columns:repeat(auto-fill,minmax(78px,1fr));gap:10px}
.mistakes figure{margin:0;text-align:center;font-size:12px}.mistakes figcaption span{color:var(--muted)}
.mistakes img{width:56px;height:56px;image-rendering:pixelated;border-radius:4px;display:block;margin:0 auto 2px}
pre{overflow:auto;background:#f9fafb;padding:12px;border-radius:6px;font-size:12px}summary{cursor:pointer;font-weight:600}
"""

# runs before plotly.js: any error on the page is counted on <html data-errors>, for tests and readers
HEAD_JS = """
(function(){var root=document.documentElement,errors=[];
function note(m){errors.push(String(m));root.setAttribute("data-errors",String(errors.length));
root.setAttribute("data-error-messages",errors.join(" | ").slice(0,2000));}
window.addEventListener("error",function(e){note(e.message||"error");});
window.addEventListener("unhandledrejection",function(e){note(e.reason&&e.reason.message||e.reason);});
var original=console.error;console.error=function(){note(Array.prototype.join.call(arguments," "));
return original.apply(console,arguments);};})();
"""

TAIL_JS = """
(function(){var root=document.documentElement,plotted=0,divs=document.querySelectorAll("div.plot[data-fig]");
root.setAttribute("data-figures",String(divs.length));
divs.forEach(function(div){var spec=JSON.parse(document.getElementById(div.dataset.fig).textContent);
Plotly.newPlot(div,spec.data,spec.layout,{responsive:true,displaylogo:false}).then(function(){
plotted+=1;root.setAttribute("data-plotted",String(plotted));});});
function key(td){var v=td.getAttribute("data-sort");if(v===null)v=td.textContent;if(v==="")return [2,""];
var n=Number(v);return isNaN(n)?[1,v.toLowerCase()]:[0,n];}
document.querySelectorAll("table.sortable th").forEach(function(th,col){th.addEventListener("click",function(){
var body=th.closest("table").tBodies[0],dir=th.getAttribute("data-dir")==="asc"?"desc":"asc",sign=dir==="asc"?1:-1;
th.parentNode.querySelectorAll("th").forEach(function(h){h.removeAttribute("data-dir");});th.setAttribute("data-dir",dir);
Array.from(body.rows).sort(function(a,b){var x=key(a.cells[col]),y=key(b.cells[col]);
if(x[0]!==y[0])return x[0]-y[0];return x[1]<y[1]?-sign:x[1]>y[1]?sign:0;}).forEach(function(r){body.appendChild(r);});});});})();
"""
