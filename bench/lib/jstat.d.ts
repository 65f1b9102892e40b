// Minimal typing of the part of jstat (https://github.com/jstat/jstat) the benches use.
declare module 'jstat' {
  const jstat: {
    jStat: { studentt: { inv(p: number, dof: number): number; cdf(x: number, dof: number): number } };
  };
  export default jstat;
}
