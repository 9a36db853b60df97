------------------------------------------------------------------
-- Slony-I log shipping archive
-- Node 1, Event 5000000102
------------------------------------------------------------------
start transaction;
select "_lab".archiveTracking_offline('7', '2011-06-01 10:00:03.5');
-- end of log archiving header
------------------------------------------------------------------
-- start of Slony-I data
------------------------------------------------------------------
update only "s1"."t1" set txt='plain, updated' where id='1';
delete from only "s1"."t1" where id='2';
insert into "s1"."t2" (k,v) values ('k	2','20');
update only "s1"."t2" set k='k1 renamed' where k='k1';
select "_lab".sequenceSetValue_offline(1,'202');

------------------------------------------------------------------
-- EOL
commit;
vacuum analyze "_lab".sl_archive_tracking;
